//! A benchmark's self-checks and targets.
//!
//! A self-check says the measurement is sound (every request answered, every sample present,
//! the same usage found, the rate offered as scheduled); one that does not hold makes the figures
//! meaningless, so [`SelfChecks::finish`] ends the process with exit status 1. A target says
//! whether the figures reach a goal from the issues; a missed target is reported and does not
//! fail the run.
//!
//! Dependency free (std only), so a crate below the testkit (the sandbox) includes this file
//! by path in its benchmark.

#![allow(
    clippy::print_stdout,
    clippy::exit,
    reason = "a benchmark reports its checks on stdout and fails the run by its exit status"
)]

use std::fmt::Display;

/// Collects named self-checks and targets, prints each as it is recorded, and fails the run
/// at [`SelfChecks::finish`] when any self-check failed.
#[derive(Debug, Default)]
#[must_use = "call finish() so that a failed self-check fails the run"]
pub struct SelfChecks {
    failed: Vec<String>,
    held: usize,
    missed_targets: Vec<String>,
    met_targets: usize,
}

impl SelfChecks {
    /// No checks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the self-check `name` (what must hold), with `detail` (the figures behind it);
    /// answers whether it held.
    pub fn check(&mut self, name: &str, held: bool, detail: impl Display) -> bool {
        if held {
            self.held += 1;
            println!("self-check held: {name} ({detail})");
        } else {
            self.failed.push(name.to_owned());
            println!("self-check FAILED: {name} ({detail})");
        }
        held
    }

    /// Records the target `name` (the goal), with `detail` (the figure against it); a missed
    /// target is reported, not failed.
    pub fn target(&mut self, name: &str, met: bool, detail: impl Display) -> bool {
        if met {
            self.met_targets += 1;
            println!("target met: {name} ({detail})");
        } else {
            self.missed_targets.push(name.to_owned());
            println!("target NOT met: {name} ({detail}; a missed target is reported, it does not fail the run)");
        }
        met
    }

    /// Prints the summary and ends the process with exit status 1 when a self-check failed.
    pub fn finish(self) {
        let targets = if self.missed_targets.is_empty() {
            format!("{} met", self.met_targets)
        } else {
            format!(
                "{} met, {} NOT met ({})",
                self.met_targets,
                self.missed_targets.len(),
                self.missed_targets.join("; ")
            )
        };
        if self.failed.is_empty() {
            println!("self-checks: all {} held; targets: {targets}", self.held);
        } else {
            println!(
                "self-checks: {} held, {} FAILED ({}); targets: {targets}; the run fails",
                self.held,
                self.failed.len(),
                self.failed.join("; ")
            );
            std::process::exit(1);
        }
    }
}
