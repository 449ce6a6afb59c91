//! `pvescale run` end to end: the real binary against the simulated cluster over HTTPS.

mod common;

use common::*;

#[test]
fn sustained_high_cpu_scales_up_after_up_after_not_before() {
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1").cpu_load(Pattern::Constant(1.9))),
        "",
    );
    // Default up_after is 2m: the first run sees the breach start, the next waits.
    let first = env.run(&["run"]);
    assert_eq!(first.code, 0, "{}", first.all_output());
    assert_eq!(
        env.vcpus(101),
        2,
        "no change before up_after:\n{}",
        first.stdout
    );
    env.sim.advance(std::time::Duration::from_secs(60));
    env.run(&["run"]);
    assert_eq!(env.vcpus(101), 2, "still within up_after");
    env.sim.advance(std::time::Duration::from_secs(60));
    let third = env.run(&["run"]);
    assert_eq!(third.code, 0, "{}", third.all_output());
    assert!(
        env.vcpus(101) > 2,
        "scaled up after 2m:\n{}",
        third.all_output()
    );
    assert!(third.stdout.contains("applied"), "{}", third.stdout);
}
