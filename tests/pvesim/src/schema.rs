//! Where Proxmox VE's official API schema is, for the tests that check against it (pvescale's
//! and the simulator's own). The files are read where they lie and never copied into the
//! project: `$PVESCALE_SCHEMA_DIR` when set, else `shared/pve-api` beside the clone (as CI has
//! it: `../shared/pve-api` from the repository's root).
//!
//! A test without the schema returns early and says so on stderr with a `SKIPPED:` line that
//! the test harness does not capture (libtest shows `eprintln!` only for failing tests). With
//! `PVESCALE_REQUIRE_SCHEMA=1`, as CI sets it, [`assert_present_where_required`] fails instead:
//! each test binary has one test that calls it, so a missing schema is one failure, not a pass.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Names the folder that holds `schema.json` and `schema-extras.json`.
pub const DIR_VAR: &str = "PVESCALE_SCHEMA_DIR";
/// Set (to anything but empty or `0`) where a missing schema must fail the tests.
pub const REQUIRE_VAR: &str = "PVESCALE_REQUIRE_SCHEMA";

/// The schema folder: `$PVESCALE_SCHEMA_DIR`, else `shared/pve-api` beside the repository.
pub fn dir() -> PathBuf {
    match std::env::var_os(DIR_VAR) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            // This crate lives in <repo>/tests/pvesim.
            let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .and_then(Path::parent)
                .expect("tests/pvesim is two levels below the repository");
            repo.parent()
                .unwrap_or(Path::new(".."))
                .join("shared/pve-api")
        }
    }
}

/// Whether the environment asks for the schema checks to run (`PVESCALE_REQUIRE_SCHEMA`).
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A schema file of [`dir`], parsed; `None` when it is not there. Invalid JSON panics.
pub fn load(name: &str) -> Option<Value> {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).ok()?;
    Some(
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display())),
    )
}

/// Says on stderr, past the test harness's capture, that `what` did not run for want of `file`.
pub fn skipped(what: &str, file: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {what}: {} not found (set {DIR_VAR} or place shared/pve-api beside the \
         repository; the schema is never copied into the project)",
        dir().join(file).display()
    );
}

/// Fails when [`required`] and a schema file is missing (the tests that need it say they skip).
pub fn assert_present_where_required() {
    let dir = dir();
    let missing: Vec<&str> = ["schema.json", "schema-extras.json"]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    assert!(
        missing.is_empty() || !required(),
        "{REQUIRE_VAR} is set, but {} has no {}: the schema checks would be skipped",
        dir.display(),
        missing.join(" or ")
    );
}
