//! A network together with the var store that owns its parameters.
use crate::modules::Sequential;
use tch::nn::{Path, VarStore};
use tch::Device;

pub struct Model {
    pub vs: VarStore,
    pub net: Sequential,
}

impl Model {
    /// Seeds libtorch's generator with `seed`, then builds the network under the store's root,
    /// so the same seed gives the same initial weights. The generator is process-wide: models
    /// built (or trained with dropout) on other threads at the same time draw from it too.
    pub fn new(device: Device, seed: u64, build: impl FnOnce(&Path) -> Sequential) -> Model {
        crate::seed_everything(seed);
        let vs = VarStore::new(device);
        let net = build(&vs.root());
        Model { vs, net }
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The number of parameters (scalars).
    pub fn num_parameters(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }
}
