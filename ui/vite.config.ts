import { defineConfig } from "vite";
import { svelte } from "@sveltejs/vite-plugin-svelte";

// Served by agent-budget under /agent-budget/, and by the desktop app from its own origin.
export default defineConfig({
  // Relative, so the same build works under /agent-budget/ and from the desktop app's own origin.
  base: "./",
  plugins: [svelte()],
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 800 },
  test: { include: ["src/**/*.test.ts"], environment: "node" },
});
