//! The one clock of pvescale.

/// The current time in unix seconds. `PVESCALE_NOW` overrides it, for tests, the demo and
/// replays against a simulated cluster whose clock is not the system's. Every "now" in the
/// program comes from here, so that an overridden clock is never mixed with the real one.
pub fn now() -> u64 {
    if let Some(fake) = std::env::var("PVESCALE_NOW")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return fake;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
