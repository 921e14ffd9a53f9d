//! Tables for stdout (Markdown, columns aligned) and number formatting.

/// A table printed as Markdown.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table { headers: headers.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..n)
                .map(|i| {
                    let cell = cells.get(i).map_or("", String::as_str);
                    let w = widths.get(i).copied().unwrap_or(0);
                    format!("{cell:<w$}")
                })
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(&self.headers);
        println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
        for row in &self.rows {
            line(row);
        }
        println!();
    }
}

/// A rate with thousands grouped, or `—` when there is none.
pub fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| group(v.round() as u64))
}

pub fn group(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

pub fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "did not finish".to_owned(), |v| format!("{v:.2}"))
}

pub fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// `a / b` as `0.42×`, or `—`.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".to_owned(),
    }
}
