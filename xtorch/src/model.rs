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

    /// Stores every 4-D parameter (the convolutions' weights) with channels-last strides
    /// (NHWC in memory, still indexed NCHW). libtorch then runs each convolution, its
    /// batch norm and their gradients in NHWC, the layout cuDNN's tensor-core kernels read
    /// directly; on the CPU it changes only the memory order. Values are unchanged.
    pub fn to_channels_last(&self) {
        tch::no_grad(|| {
            for mut t in self.vs.trainable_variables() {
                if t.dim() == 4 {
                    let nhwc = t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
                    t.set_data(&nhwc);
                }
            }
        })
    }

    /// The number of parameters (scalars).
    pub fn num_parameters(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }
}
