//! The RBF SVC against scikit-learn: decision values on a tiny three-class problem
//! (computed with scikit-learn 1.9's `SVC(C=2, gamma=0.3, tol=1e-6,
//! decision_function_shape="ovo")`), the same folds as `StratifiedKFold`, the digits'
//! accuracy of scikit-learn on those folds, and bad input refused.

use prism_tune::datasets::{digits, stratified_folds};
use prism_tune::svc::{ClassWeight, Features, Svc, SvcParams};
use prism_tune::TuneError;

#[test]
fn decision_values_match_scikit_learn_on_a_tiny_problem() {
    let x: [f32; 20] = [
        0., 0., 1., 0., 0., 1., 4., 4., 5., 4., 4., 5., 0., 5., 1., 5., 0., 6., 2., 2.,
    ];
    let y = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0];
    let params = SvcParams {
        c: 2.0,
        gamma: 0.3,
        tol: 1e-6,
        class_weight: ClassWeight::None,
    };
    let svc = Svc::fit(&Features::new(&x, 2).unwrap(), &y, &params).unwrap();
    let test = [0.5_f32, 0.5, 4.5, 4.5, 0.5, 5.5, 2.5, 3.0];
    let test = Features::new(&test, 2).unwrap();
    let expected = [
        [1.1138269647e+00, 1.1151019416e+00, -7.5736630171e-04],
        [-1.1457644000e+00, 1.9049018607e-01, 1.1315024284e+00],
        [1.8519379216e-01, -1.1511866328e+00, -1.1292604345e+00],
        [4.1989877200e-01, 5.7591479353e-01, 1.1093638810e-01],
    ];
    for (got, want) in svc.decision_function(&test).iter().zip(expected) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
        }
    }
    assert_eq!(svc.predict(&test), vec![0, 1, 2, 0]);
    assert_eq!(svc.support_vectors(), 4 + 3 + 3);
}

#[test]
fn folds_are_scikit_learns_and_digits_accuracy_matches_it() {
    let data = digits();
    let folds = stratified_folds(&data.y, 5);
    // The first test rows of each fold, as StratifiedKFold(5) makes them.
    let firsts: Vec<Vec<usize>> = folds.iter().map(|(_, t)| t[..5].to_vec()).collect();
    assert_eq!(
        firsts,
        vec![
            vec![0, 1, 2, 3, 4],
            vec![335, 347, 349, 354, 355],
            vec![701, 708, 709, 718, 720],
            vec![1067, 1068, 1069, 1075, 1076],
            vec![1423, 1433, 1436, 1437, 1438],
        ]
    );
    // scikit-learn's SVC on these folds: mean accuracy 0.9722 (C=10, gamma=0.001) and
    // 0.9622 (C=100, gamma=1e-4), with 682 and 438 support vectors on the last fold.
    for (c, gamma, accuracy, svs) in [(10.0, 0.001, 0.9722, 682), (100.0, 1e-4, 0.9622, 438)] {
        let params = SvcParams {
            c,
            gamma,
            ..SvcParams::default()
        };
        let mut mean = 0.0;
        let mut last_svs = 0;
        for (train, test) in &folds {
            let (tr, te) = (data.select(train), data.select(test));
            let svc = Svc::fit(&Features::new(&tr.x, 64).unwrap(), &tr.y, &params).unwrap();
            mean += svc.score(&Features::new(&te.x, 64).unwrap(), &te.y) / 5.0;
            last_svs = svc.support_vectors();
        }
        assert!((mean - accuracy).abs() < 0.0005, "C={c}: {mean}");
        assert_eq!(last_svs, svs);
    }
}

#[test]
fn balanced_weights_favour_a_rare_class() {
    // Nine points of class 0 around the origin, one of class 1 among them at (1, 1).
    let mut x: Vec<f32> = Vec::new();
    for i in 0..9 {
        x.extend([(i % 3) as f32, (i / 3) as f32]);
    }
    x.extend([1.0, 1.0]);
    let mut y = vec![0; 9];
    y.push(1);
    let f = Features::new(&x, 2).unwrap();
    let plain = SvcParams {
        c: 0.1,
        gamma: 1.0,
        ..SvcParams::default()
    };
    let balanced = SvcParams {
        class_weight: ClassWeight::Balanced,
        ..plain
    };
    let probe = Features::new(&[1.0_f32, 1.0], 2).unwrap();
    let d_plain = Svc::fit(&f, &y, &plain).unwrap().decision_function(&probe)[0][0];
    let d_bal = Svc::fit(&f, &y, &balanced)
        .unwrap()
        .decision_function(&probe)[0][0];
    // Positive favours class 0: weighting class 1 up moves the value toward it.
    assert!(d_bal < d_plain, "{d_bal} vs {d_plain}");
}

#[test]
fn bad_input_is_refused() {
    let x = [0.0_f32, 1.0, 2.0, 3.0];
    let f = Features::new(&x, 1).unwrap();
    let ok = SvcParams::default();
    assert!(matches!(Features::new(&x, 3), Err(TuneError::Data(_))));
    assert!(matches!(
        Svc::fit(&f, &[0, 0, 0, 0], &ok),
        Err(TuneError::Data(_))
    ));
    assert!(matches!(
        Svc::fit(&f, &[0, 1], &ok),
        Err(TuneError::Data(_))
    ));
    for bad in [
        SvcParams { c: 0.0, ..ok },
        SvcParams { gamma: -1.0, ..ok },
        SvcParams { c: f64::NAN, ..ok },
    ] {
        assert!(matches!(
            Svc::fit(&f, &[0, 1, 0, 1], &bad),
            Err(TuneError::Data(_))
        ));
    }
}
