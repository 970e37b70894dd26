//! The answer to "how is one network trained with anchor, positive and negative?", as tests.
//!
//! A tiny embedding network f(x) = normalize(W x) stands in for Inception-ResNet-v1 (the
//! mechanism is the same for any network).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use facenet_train::loss::{
    l2_normalize_rows, triplet_hinge_arguments_naive, triplet_loss, triplet_loss_naive,
};

const ALPHA: f64 = 0.2;

fn device() -> Device {
    Device::flex().autodiff()
}

fn embed(net: &Linear, x: Tensor<2>) -> Tensor<2> {
    l2_normalize_rows(net.forward(x))
}

/// Uniform values in [-0.5, 0.5) from a fixed linear congruential sequence, so every run (and
/// every machine) sees the same numbers.
fn uniform(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect()
}

fn data(rows: usize, seed: u64) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(uniform(rows * 6, seed), [rows, 6]),
        &device(),
    )
}

/// A 6 -> 4 linear map without bias, with fixed weights (tests must not depend on the run).
fn fixed_net(seed: u64) -> Linear {
    Linear {
        weight: Param::from_tensor(
            Tensor::from_data(TensorData::new(uniform(24, seed), [6, 4]), &device()).require_grad(),
        ),
        bias: None,
    }
}

/// The rows of an `n x 4` embedding tensor.
fn rows(t: Tensor<2>) -> Vec<Vec<f32>> {
    to_vec(t).chunks(4).map(<[f32]>::to_vec).collect()
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

/// The shared network's gradient equals the sum of the gradients of three copies, one per
/// role; and both match a finite-difference estimate.
#[test]
fn shared_gradient_is_sum_of_branch_gradients() {
    let dev = device();
    // Fixed weights: a random initialisation could put a triplet on the hinge's kink, where the
    // loss has no derivative and finite differences disagree with autodiff.
    let net = fixed_net(7);
    let (a, p, n) = (data(5, 1), data(5, 2), data(5, 3));

    // One network: A, P, N stacked into one batch.
    let x = Tensor::cat(vec![a.clone(), p.clone(), n.clone()], 0);
    let e = embed(&net, x);
    let (ea, ep, en) = (
        e.clone().narrow(0, 0, 5),
        e.clone().narrow(0, 5, 5),
        e.narrow(0, 10, 5),
    );
    // Every triplet must sit clearly on one side of the kink (the loss is differentiable
    // there, and a step of eps = 1e-3 on one weight moves an argument by far less than 0.02),
    // and at least one must be active.
    let args = triplet_hinge_arguments_naive(
        &rows(ea.clone()),
        &rows(ep.clone()),
        &rows(en.clone()),
        ALPHA as f32,
    );
    assert!(
        args.iter().all(|v| v.abs() > 0.02),
        "a triplet is too close to the hinge: {args:?}"
    );
    assert!(
        args.iter().any(|&v| v > 0.0),
        "the data must give an active loss"
    );
    let loss = triplet_loss(ea, ep, en, ALPHA);
    let loss_value = to_vec(loss.clone())[0];
    assert!(loss_value > 0.0, "the data must give an active loss");
    let grads = loss.backward();
    let shared = to_vec(net.weight.val().grad(&grads).unwrap());

    // Three copies with the same values, one per role.
    let w = net.weight.val().detach().into_data();
    let copy = || Linear {
        weight: Param::from_tensor(Tensor::from_data(w.clone(), &dev).require_grad()),
        bias: None,
    };
    let (ca, cp, cn) = (copy(), copy(), copy());
    let loss2 = triplet_loss(
        embed(&ca, a.clone()),
        embed(&cp, p.clone()),
        embed(&cn, n.clone()),
        ALPHA,
    );
    assert!((to_vec(loss2.clone())[0] - loss_value).abs() < 1e-6);
    let g2 = loss2.backward();
    let per_branch: Vec<Vec<f32>> = [&ca, &cp, &cn]
        .iter()
        .map(|c| to_vec(c.weight.val().grad(&g2).unwrap()))
        .collect();
    for i in 0..shared.len() {
        let sum = per_branch[0][i] + per_branch[1][i] + per_branch[2][i];
        assert!(
            (shared[i] - sum).abs() < 1e-5,
            "w[{i}]: shared {} vs sum {sum}",
            shared[i]
        );
    }
    // Each branch contributes: none of the three gradients is zero.
    for g in &per_branch {
        assert!(g.iter().any(|v| v.abs() > 1e-6));
    }

    // Finite differences on every weight (central, eps 1e-3, in f32).
    let wv = w.clone().try_into_vec::<f32>().unwrap();
    let loss_at = |wv: &[f32]| {
        let dev = Device::flex();
        let net = Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(wv.to_vec(), [6, 4]),
                &dev,
            )),
            bias: None,
        };
        let plain = |t: &Tensor<2>| Tensor::<2>::from_data(t.to_data(), &dev);
        let l = triplet_loss(
            embed(&net, plain(&a)),
            embed(&net, plain(&p)),
            embed(&net, plain(&n)),
            ALPHA,
        );
        to_vec(l)[0]
    };
    let eps = 1e-3;
    for i in 0..wv.len() {
        let (mut up, mut down) = (wv.clone(), wv.clone());
        up[i] += eps;
        down[i] -= eps;
        let fd = (loss_at(&up) - loss_at(&down)) / (2.0 * eps);
        assert!(
            (fd - shared[i]).abs() < 2e-3,
            "w[{i}]: finite difference {fd} vs autodiff {}",
            shared[i]
        );
    }
}

/// The tensor loss equals a plain loop.
#[test]
fn loss_equals_naive_loop() {
    let dev = Device::flex();
    let rnd = |s| {
        l2_normalize_rows(
            Tensor::<2>::random([40, 16], Distribution::Normal(0.0, 1.0), &dev).add_scalar(s),
        )
    };
    let (a, p, n) = (rnd(0.0), rnd(0.1), rnd(-0.1));
    let rows = |t: &Tensor<2>| -> Vec<Vec<f32>> {
        to_vec(t.clone()).chunks(16).map(<[f32]>::to_vec).collect()
    };
    let naive = triplet_loss_naive(&rows(&a), &rows(&p), &rows(&n), ALPHA as f32);
    let ours = to_vec(triplet_loss(a, p, n, ALPHA))[0];
    assert!(
        (naive - ours).abs() < 1e-5,
        "naive {naive} vs tensor {ours}"
    );
    assert!(naive > 0.0);
}

/// One optimizer step on a fixed batch lowers the loss.
#[test]
fn one_step_lowers_the_loss() {
    let mut net = fixed_net(8);
    let x = Tensor::cat(vec![data(8, 4), data(8, 5), data(8, 6)], 0);
    let loss_of = |net: &Linear| {
        let e = embed(net, x.clone());
        triplet_loss(
            e.clone().narrow(0, 0, 8),
            e.clone().narrow(0, 8, 8),
            e.narrow(0, 16, 8),
            ALPHA,
        )
    };
    let before = loss_of(&net);
    let b = to_vec(before.clone())[0];
    let grads = GradientsParams::from_grads(before.backward(), &net);
    let mut opt = SgdConfig::new().init();
    net = opt.step(0.05, net, grads);
    let after = to_vec(loss_of(&net))[0];
    assert!(after < b, "loss {b} -> {after}");
    let _ = net.valid();
}
