//! The value syntaxes of the worker's settings and query parameters: sizes
//! (`64KiB`, `1.5GiB`) and durations (`60s`, `500ms`).
//!
//! Kept apart from `config` so that the keeping rules (`rules`), the HTTP
//! query parser and the settings table all read values the same way without
//! importing each other.

use std::time::Duration;

/// Parse a size: `1048576`, `64KiB`, `1MiB`, `10GiB`, `1.5GiB`. Decimal
/// units (`KB`, `MB`, `GB`, `TB`) are read as binary ones, as Alluxio does:
/// `1MB` = 1 MiB = 1,048,576 bytes. Case is ignored.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("invalid size {text:?}: unknown unit {unit:?}")),
    };
    if num.is_empty() {
        return Err(format!("invalid size {text:?}: expected a number"));
    }
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("invalid size {text:?}: too large"));
    }
    let f: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {text:?}: bad number {num:?}"))?;
    let bytes = f * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size {text:?}: out of range"));
    }
    Ok(bytes.round() as u64)
}

/// Parse a duration: `60s`, `500ms`, `2m`, `0`; a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// The memory this process may use: its cgroup's limit (v2 `memory.max`,
/// else v1 `memory.limit_in_bytes`), else the machine's RAM (`MemTotal`).
/// What a share such as `memory_capacity: 60%` is a share of: a container's
/// memory limit in Kubernetes, all of the RAM elsewhere.
pub fn memory_limit() -> Result<u64, String> {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    let cgroup = cgroup_memory_limit();
    match (cgroup, ram) {
        (Some(c), Some(r)) => Ok(c.min(r)),
        (Some(c), None) => Ok(c),
        (None, Some(r)) => Ok(r),
        (None, None) => Err("no cgroup memory limit and no MemTotal in /proc/meminfo".into()),
    }
}

/// The memory limit of this process's cgroup, `None` when it has none.
fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    // cgroup v2: "0::/path"; the limit is in the group's memory.max.
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
        let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        for d in dir
            .ancestors()
            .take_while(|d| d.starts_with("/sys/fs/cgroup"))
        {
            if let Ok(v) = std::fs::read_to_string(d.join("memory.max")) {
                if let Ok(n) = v.trim().parse::<u64>() {
                    return Some(n);
                }
            }
        }
        return None;
    }
    // cgroup v1 (a huge number means no limit).
    std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&n| n < 1 << 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1MB").unwrap(), 1 << 20);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5gib").unwrap(), 3 << 29);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_memory_limit_is_at_most_the_ram() {
        let limit = memory_limit().unwrap();
        assert!(limit > 0);
        let ram = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: u64 = ram
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        assert!(limit <= kib * 1024);
    }
}
