//! The sleeping-task workloads of Ray's tutorials (W4, W6, W7 of the shared workload
//! list): tasks and actor methods that only sleep, so that their makespan shows how well
//! the scheduler packs them.

use std::time::Duration;

/// The sixteen sleep times of W4, in seconds (they sum to 9.9 s).
pub const SLEEPS: [f64; 16] = [
    0.1, 0.2, 0.1, 0.5, 0.7, 0.9, 0.5, 0.4, 1.5, 1.3, 1.0, 0.3, 0.7, 0.6, 0.3, 0.8,
];

/// Sleeps `secs` seconds in a task and returns them.
#[prism::remote]
pub fn sleep_for(secs: f64) -> f64 {
    std::thread::sleep(Duration::from_secs_f64(secs));
    secs
}

/// W6 step one: sleeps a second, returns `2x`.
#[prism::remote]
pub fn func1(x: i64) -> i64 {
    std::thread::sleep(Duration::from_secs(1));
    x * 2
}

/// W6 step two: sleeps a second, returns `y + 1`.
#[prism::remote]
pub fn func2(y: i64) -> i64 {
    std::thread::sleep(Duration::from_secs(1));
    y + 1
}

/// The W7 counter: each increment sleeps a second.
#[prism::actor]
pub struct SlowCounter {
    value: i64,
}

#[prism::actor]
impl SlowCounter {
    /// A counter starting at `start`.
    pub fn new(start: i64) -> Self {
        SlowCounter { value: start }
    }

    /// Sleeps `secs`, then adds one and returns the new value.
    pub fn increment(&mut self, secs: f64) -> i64 {
        std::thread::sleep(Duration::from_secs_f64(secs));
        self.value += 1;
        self.value
    }
}

/// The makespan a greedy scheduler reaches running `times` in submission order on
/// `slots` parallel slots: the bound for any scheduler that cannot know durations in
/// advance and starts tasks in the order given.
///
/// ```
/// use prism_examples::sleep::{fifo_makespan, SLEEPS};
/// assert!((fifo_makespan(&SLEEPS, 2) - 5.2).abs() < 1e-9);
/// assert!((fifo_makespan(&SLEEPS, 16) - 1.5).abs() < 1e-9);
/// ```
pub fn fifo_makespan(times: &[f64], slots: usize) -> f64 {
    let mut free_at = vec![0.0_f64; slots.max(1)];
    for t in times {
        let (i, _) = free_at
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("at least one slot");
        free_at[i] += t;
    }
    free_at.into_iter().fold(0.0, f64::max)
}
