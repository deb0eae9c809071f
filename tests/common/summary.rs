//! Parsing the backup summary line.

/// Parses a size like "0", "12345", "1.5 MiB", "20MB", "3 KiB", "7 bytes".
pub fn parse_size(num: &str, unit: &str) -> Option<u64> {
    let x: f64 = num.parse().ok()?;
    let u = unit.trim().to_ascii_lowercase();
    let mult: f64 = match u.as_str() {
        "" | "b" | "byte" | "bytes" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1048576.0,
        "g" | "gb" => 1e9,
        "gib" => 1073741824.0,
        "t" | "tb" => 1e12,
        "tib" => 1099511627776.0,
        _ => return None,
    };
    Some((x * mult).round() as u64)
}

/// Finds the "bytes read" figure of the backup summary: within one comma-separated part of a
/// line that has the word "read", the size right after it (`read 1.5 MiB`, `read: 1572864`,
/// `bytes read: 0 B`, `read=12`), or else the size before it (`1.5 MiB read`).
pub fn bytes_read(text: &str) -> Option<u64> {
    for line in text.lines().rev() {
        let low = line.to_ascii_lowercase();
        for seg in low.split([',', ';', '|', '(', ')']) {
            let toks: Vec<&str> = seg
                .split(|c: char| c.is_whitespace() || c == ':' || c == '=')
                .filter(|t| !t.is_empty())
                .collect();
            let Some(i) = toks
                .iter()
                .position(|t| *t == "read" || t.ends_with("_read") || t.starts_with("read_"))
            else {
                continue;
            };
            if let Some(v) = (i + 1..toks.len()).find_map(|j| size_at(&toks, j)) {
                return Some(v);
            }
            if let Some(v) = (0..i).rev().find_map(|j| size_at(&toks, j)) {
                return Some(v);
            }
        }
    }
    None
}

/// A size starting at token i: "12", "1.5" + "mib", or "1.5mib".
fn size_at(toks: &[&str], i: usize) -> Option<u64> {
    let t = toks.get(i)?;
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || !num.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if !unit.is_empty() {
        return parse_size(num, unit);
    }
    let next = toks.get(i + 1).copied().unwrap_or("");
    parse_size(num, next).or_else(|| parse_size(num, ""))
}
