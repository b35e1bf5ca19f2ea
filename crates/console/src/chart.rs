//! Daily bar charts as inline SVG, drawn on the server: one bar a day, scaled to the largest,
//! each with a tooltip (`<title>`) and a link to that day's samples. Heights are computed from
//! the exact decimals in whole pixels; every text is escaped here, since the markup is put into
//! the page as it is.

use rust_decimal::prelude::ToPrimitive as _;
use rust_decimal::{Decimal, RoundingStrategy};
use std::fmt::Write as _;

/// Drawing height of the tallest bar, in SVG units.
pub const PLOT_HEIGHT: u32 = 120;
/// Width of one day's slot.
pub const SLOT: u32 = 14;
const TOP: u32 = 4;
const AXIS: u32 = 18;

/// One bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bar {
    /// The label under it (a day of the month).
    pub label: String,
    /// Its value.
    pub value: Decimal,
    /// What its tooltip says.
    pub title: String,
    /// Where it links to.
    pub href: Option<String>,
}

/// `text` escaped for SVG/XML text and attribute values.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The height of `value`'s bar when `max` is drawn [`PLOT_HEIGHT`] tall: rounded half up, at
/// least 1 for any positive value (so a small day still shows), 0 for nothing.
#[must_use]
pub fn height(value: Decimal, max: Decimal) -> u32 {
    if value <= Decimal::ZERO || max <= Decimal::ZERO {
        return 0;
    }
    let scaled =
        (value * Decimal::from(PLOT_HEIGHT) / max).round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    scaled.to_u32().unwrap_or(PLOT_HEIGHT).clamp(1, PLOT_HEIGHT)
}

/// The chart of `bars`, described for screen readers by `label`.
#[must_use]
pub fn bars(label: &str, bars: &[Bar]) -> String {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(Decimal::ZERO);
    let slots = u32::try_from(bars.len()).unwrap_or(u32::MAX).max(1);
    let (width, total_height) = (slots.saturating_mul(SLOT), TOP + PLOT_HEIGHT + AXIS);
    let base = TOP + PLOT_HEIGHT;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {width} {total_height}" role="img" aria-label="{}" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">"#,
        escape(label)
    );
    let _ = write!(svg, r#"<line x1="0" y1="{base}" x2="{width}" y2="{base}" class="axis"/>"#);
    for (i, bar) in (0_u32..).zip(bars) {
        let x = i * SLOT;
        let h = height(bar.value, max);
        let body = format!(
            r#"<rect x="{}" y="{}" width="{}" height="{h}" class="bar"><title>{}</title></rect><text x="{}" y="{}" class="tick">{}</text>"#,
            x + 2,
            base - h,
            SLOT - 4,
            escape(&bar.title),
            x + SLOT / 2,
            base + 13,
            escape(&bar.label),
        );
        match &bar.href {
            Some(href) => {
                let _ = write!(svg, r#"<a href="{}">{body}</a>"#, escape(href));
            }
            None => svg.push_str(&body),
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, value: &str) -> Bar {
        Bar {
            label: label.to_owned(),
            value: value.parse().unwrap_or_default(),
            title: format!("{label}: {value}"),
            href: Some(format!("/usage/2026-12-{label}")),
        }
    }

    #[test]
    fn the_largest_day_fills_the_plot_and_the_others_scale_exactly() {
        let max: Decimal = "3".parse().unwrap_or_default();
        assert_eq!(height(max, max), PLOT_HEIGHT);
        assert_eq!(height("1.5".parse().unwrap_or_default(), max), PLOT_HEIGHT / 2);
        assert_eq!(height("1".parse().unwrap_or_default(), max), 40);
        assert_eq!(height("0.0000001".parse().unwrap_or_default(), max), 1, "a tiny day still shows");
        assert_eq!(height(Decimal::ZERO, max), 0);
        assert_eq!(height(Decimal::ONE, Decimal::ZERO), 0);
    }

    #[test]
    fn a_chart_has_a_linked_bar_per_day_and_escapes_its_text() {
        let svg = bars("CPU <core-hours>", &[bar("01", "2"), bar("02", "0"), bar("03", "4")]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(r#"aria-label="CPU &lt;core-hours&gt;""#), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 3);
        assert_eq!(svg.matches(r#"<a href="/usage/2026-12-"#).count(), 3);
        assert!(svg.contains(&format!(r#"height="{}""#, PLOT_HEIGHT)), "the largest fills the plot");
        assert!(svg.contains(r#"height="60""#), "half the largest, half the height: {svg}");
        assert!(svg.contains(r#"height="0""#));
        let hostile = bars("x", &[Bar { label: "<b>".into(), value: Decimal::ONE, title: "\"'&".into(), href: None }]);
        assert!(hostile.contains("&lt;b&gt;") && hostile.contains("&quot;&#39;&amp;") && !hostile.contains("<a "));
    }

    #[test]
    fn no_days_is_an_empty_plot() {
        let svg = bars("nothing", &[]);
        assert!(svg.contains("viewBox=\"0 0 14 ") && !svg.contains("<rect"));
    }
}
