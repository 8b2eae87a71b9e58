//! Trial schedulers on a synthetic trainable whose learning curves are known: ASHA and
//! the median rule stop the trials that are behind, keep the best, and spend far fewer
//! iterations than running every trial to the end.

use prism_tune::{Asha, Decision, Fifo, MedianStopping, Mode, TrialScheduler};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Trial `i`'s accuracy after `t` iterations: a saturating curve towards `final_i`;
/// the finals are all different, so trial order is the same at every iteration.
fn accuracy(finals: &[f64], i: usize, t: u64) -> f64 {
    finals[i] * (1.0 - (-(t as f64) / 4.0).exp())
}

/// Runs every trial in rounds (each live trial reports its next iteration, in a
/// shuffled order each round) until all stopped or reached `max_t`. Returns the
/// iterations each trial ran.
fn run(sched: &mut dyn TrialScheduler, finals: &[f64], max_t: u64, seed: u64) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ran = vec![0u64; finals.len()];
    let mut live: Vec<usize> = (0..finals.len()).collect();
    while !live.is_empty() {
        live.shuffle(&mut rng);
        let mut next = Vec::new();
        for &i in &live {
            ran[i] += 1;
            let t = ran[i];
            let d = sched.on_result(i, t, accuracy(finals, i, t));
            if d == Decision::Continue && t < max_t {
                next.push(i);
            }
        }
        live = next;
    }
    ran
}

fn finals(n: usize, seed: u64) -> Vec<f64> {
    let mut f: Vec<f64> = (0..n).map(|i| 0.5 + 0.45 * i as f64 / n as f64).collect();
    f.shuffle(&mut StdRng::seed_from_u64(seed));
    f
}

fn best(finals: &[f64]) -> usize {
    (0..finals.len())
        .max_by(|a, b| finals[*a].total_cmp(&finals[*b]))
        .unwrap()
}

#[test]
fn fifo_runs_everything_to_the_end() {
    let f = finals(10, 1);
    assert_eq!(run(&mut Fifo, &f, 20, 1), vec![20; 10]);
}

#[test]
fn asha_keeps_the_best_stops_the_rest_early_and_saves_most_iterations() {
    for seed in 0..5 {
        let f = finals(27, seed);
        let mut asha = Asha::new(Mode::Max, 27, 1, 3.0);
        let ran = run(&mut asha, &f, 27, seed);
        // The best trial always goes all the way.
        assert_eq!(ran[best(&f)], 27, "seed {seed}: {ran:?}");
        // Trials stop only at rungs (1, 3, 9) or at max_t.
        assert!(ran.iter().all(|t| [1, 3, 9, 27].contains(t)), "{ran:?}");
        // Whatever the order of arrival at the rungs, the bottom half never reaches
        // max_t (an early arrival may pass a rung that later ones do not).
        let mut order: Vec<usize> = (0..27).collect();
        order.sort_by(|a, b| f[*a].total_cmp(&f[*b]));
        assert!(order[..13].iter().all(|i| ran[*i] < 27), "{ran:?}");
        // Far fewer iterations than running all 27 trials to 27.
        let total: u64 = ran.iter().sum();
        assert!(total < 729 / 3, "seed {seed}: {total}");
    }
}

#[test]
fn asha_minimizes_a_loss_just_as_well() {
    let f = finals(27, 9);
    let mut asha = Asha::new(Mode::Min, 27, 1, 3.0);
    // Report losses (1 - accuracy): the same trials must win.
    let mut rng = StdRng::seed_from_u64(9);
    let mut ran = vec![0u64; f.len()];
    let mut live: Vec<usize> = (0..f.len()).collect();
    while !live.is_empty() {
        live.shuffle(&mut rng);
        let mut next = Vec::new();
        for &i in &live {
            ran[i] += 1;
            let loss = 1.0 - accuracy(&f, i, ran[i]);
            if asha.on_result(i, ran[i], loss) == Decision::Continue && ran[i] < 27 {
                next.push(i);
            }
        }
        live = next;
    }
    assert_eq!(ran[best(&f)], 27);
}

#[test]
fn the_median_rule_stops_trials_below_the_others_running_means() {
    let f = finals(12, 3);
    let mut rule = MedianStopping::new(Mode::Max, 3, 3);
    let ran = run(&mut rule, &f, 30, 3);
    assert_eq!(ran[best(&f)], 30);
    // Nobody stops inside the grace period.
    assert!(ran.iter().all(|t| *t >= 3), "{ran:?}");
    // The bottom third stop before the end. The rule is lenient (as Ray Tune's is):
    // running means lag rising curves, so middling trials whose results have levelled
    // off stay above the median of the others' means and run on.
    let mut order: Vec<usize> = (0..f.len()).collect();
    order.sort_by(|a, b| f[*a].total_cmp(&f[*b]));
    assert!(order[..4].iter().all(|i| ran[*i] < 30), "{ran:?}");
    assert!(ran.iter().sum::<u64>() <= 12 * 30 * 85 / 100, "{ran:?}");
}
