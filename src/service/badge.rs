//! The shields-style SVG badge of a budget: `name | $spent / $cap`, coloured by use.

use crate::budget::level::Level;
use crate::ledger::Status;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Flat,
    FlatSquare,
}

impl Style {
    pub fn parse(s: Option<&str>) -> Option<Style> {
        match s.unwrap_or("flat") {
            "flat" => Some(Style::Flat),
            "flat-square" => Some(Style::FlatSquare),
            _ => None,
        }
    }
}

const GREEN: &str = "#4c1";
const AMBER: &str = "#dfb317";
const RED: &str = "#e05d44";

/// Green, amber from 80 % of the cap, red at 100 % or once a request was refused this period
/// (`Level`).
pub fn colour(s: &Status) -> &'static str {
    match Level::of(s.period.dollars, s.budget.max_dollars, s.period.blocked) {
        Level::Ok => GREEN,
        Level::Warning => AMBER,
        Level::Over => RED,
    }
}

/// Approximate advance width in pixels of a character in 11 px Verdana (the shields font).
fn char_width(c: char) -> f64 {
    match c {
        'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' => 3.9,
        'f' | 't' | 'r' | ' ' | '(' | ')' | '[' | ']' | '-' | '/' => 4.9,
        'm' | 'w' => 10.7,
        'M' | 'W' | '@' | '%' => 11.0,
        'A'..='Z' => 7.6,
        '0'..='9' | '$' | '_' | '#' | '?' | '+' | '=' | '<' | '>' | '~' => 7.0,
        'a'..='z' => 6.6,
        c if c.is_ascii() => 7.0,
        // Wide scripts (CJK) and anything unknown: err wide so text never overflows.
        _ => 11.0,
    }
}

fn text_width(s: &str) -> f64 {
    s.chars().map(char_width).sum::<f64>().ceil()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(s: &Status, style: Style) -> String {
    let label = s.budget.name.as_str();
    let value = match s.budget.max_dollars {
        Some(cap) => format!(
            "{} / {}",
            s.period.dollars.display_cents(),
            cap.display_cents()
        ),
        None => s.period.dollars.display_cents(),
    };
    let (lw, vw) = (text_width(label) + 10.0, text_width(&value) + 10.0);
    let w = lw + vw;
    let (label, value) = (escape(label), escape(&value));
    let colour = colour(s);
    let (rx, gradient) = match style {
        Style::Flat => (
            3,
            r##"<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>"##,
        ),
        Style::FlatSquare => (0, ""),
    };
    let shine = if gradient.is_empty() {
        String::new()
    } else {
        format!(r#"<rect width="{w}" height="20" fill="url(#s)"/>"#)
    };
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{label}: {value}"><title>{label}: {value}</title>{gradient}<clipPath id="r"><rect width="{w}" height="20" rx="{rx}" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{colour}"/>{shine}</g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11"><text x="{lx}" y="14">{label}</text><text x="{vx}" y="14">{value}</text></g></svg>"##,
        lx = lw / 2.0,
        vx = lw + vw / 2.0,
    )
}
