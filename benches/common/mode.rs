//! Whether a bench binary measures or only smoke-tests its code paths, and the sizes that
//! follow from it.
//!
//! `cargo bench` passes `--bench`; `cargo test --all-targets` (and `cargo test --benches`)
//! runs the bench binaries without it, in a debug build, where criterion runs each
//! benchmark once. There a bench sets up small fleets and takes a few iterations: enough to
//! show the code path still works, not minutes of setup that measures nothing.

/// True under `cargo bench` (and not `cargo bench -- --test`, criterion's own smoke run).
pub fn full() -> bool {
    let mut args = std::env::args();
    let (mut bench, mut test) = (false, false);
    for a in args.by_ref() {
        bench |= a == "--bench";
        test |= a == "--test";
    }
    bench && !test
}

/// `n` when measuring; a hundredth of it, at least 3, in a smoke run.
pub fn scaled(n: usize) -> usize {
    if full() { n } else { (n / 100).max(3) }
}
