// The only module that imports @tauri-apps/api: command calls and event subscription inside
// the desktop app. Loaded only when the page runs in Tauri.
import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import type { CoreEvent } from "../bindings/CoreEvent";

export { invoke };

export async function onCoreEvent(handler: (e: CoreEvent) => void): Promise<() => void> {
  return listen<CoreEvent>("core-event", (e) => handler(e.payload));
}
