//! The GPU route (feature `gpu`: burn's wgpu backend, Vulkan on Linux; it builds from crates.io
//! alone). The same network, with the same weights, computes on the GPU what it computes on the
//! CPU, whose outputs the parity tests hold to the Keras model's; so the GPU's are the Keras
//! model's too. Random weights: the GPU machine needs nothing fetched.
#![cfg(feature = "gpu")]

use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use facenet::{Device, DeviceChoice, InceptionResnetV1Config};

#[test]
#[ignore = "needs a GPU with a Vulkan driver: `cargo test --release -p facenet --features gpu --test gpu -- --ignored`"]
fn gpu_forward_matches_the_cpu() {
    let gpu = facenet::device_for(DeviceChoice::Gpu).unwrap();
    let cpu = Device::flex();
    cpu.seed(7);
    let net = InceptionResnetV1Config::keras_128().init(&cpu);
    for batch in [1, 8] {
        let x = Tensor::<4>::random([batch, 3, 160, 160], Distribution::Normal(0.0, 1.0), &cpu);
        let want: Vec<f32> = net.forward(x.clone()).into_data().try_into_vec().unwrap();
        let got: Vec<f32> = net
            .clone()
            .to_device(&gpu)
            .forward(x.to_device(&gpu))
            .into_data()
            .try_into_vec()
            .unwrap();
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("batch {batch}: max |gpu - cpu| {err:.2e} (scale {scale:.2})");
        assert!(err <= 1e-3 * scale, "batch {batch}: max abs diff {err}");
    }
}
