//! Compilation targets.

use std::fmt;

/// An NVIDIA GPU architecture that PTX is emitted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GpuArch {
    /// Ampere (A100): `sm_80`, PTX ISA 7.0.
    Sm80,
    /// Hopper (H100/H200): `sm_90`, PTX ISA 8.0.
    Sm90,
}

impl GpuArch {
    /// The chip name (`sm_90`), as ptxas `-arch` and the NVVM target take it.
    pub fn name(self) -> &'static str {
        match self {
            GpuArch::Sm80 => "sm_80",
            GpuArch::Sm90 => "sm_90",
        }
    }

    /// The architecture named `sm_80` or `sm_90`.
    pub fn parse(name: &str) -> Option<GpuArch> {
        match name {
            "sm_80" => Some(GpuArch::Sm80),
            "sm_90" => Some(GpuArch::Sm90),
            _ => None,
        }
    }

    /// The compute capability `(major, minor)`.
    pub fn compute_capability(self) -> (u32, u32) {
        match self {
            GpuArch::Sm80 => (8, 0),
            GpuArch::Sm90 => (9, 0),
        }
    }

    /// The PTX ISA feature the NVVM target is given (`+ptx80`).
    pub fn ptx_features(self) -> &'static str {
        match self {
            GpuArch::Sm80 => "+ptx70",
            GpuArch::Sm90 => "+ptx80",
        }
    }
}

impl fmt::Display for GpuArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Host code, JIT-compiled in-process; the CPU executor runs blocks on threads.
    Cpu,
    /// PTX for an NVIDIA GPU; blocks are CUDA blocks.
    Gpu { arch: GpuArch },
}

impl Target {
    pub fn is_gpu(self) -> bool {
        matches!(self, Target::Gpu { .. })
    }
}

/// How transcendental functions are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum MathFlavor {
    /// The `math` dialect, lowered to libm calls / LLVM intrinsics (CPU).
    Libm,
    /// Built from a handful of primitives (`exp2`, `log2`, `sin`, `cos`,
    /// `sqrt`, `rcp`), which on the GPU are NVVM intrinsics. `nvvm = false`
    /// maps the primitives to CPU ops so the formulas can be tested on the host.
    Portable { nvvm: bool },
}

/// Everything the emitter needs to know about the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EmitTarget {
    pub gpu: bool,
    pub math: MathFlavor,
}

impl EmitTarget {
    pub fn new(target: Target, portable_math: bool) -> EmitTarget {
        match target {
            Target::Cpu => EmitTarget {
                gpu: false,
                math: if portable_math {
                    MathFlavor::Portable { nvvm: false }
                } else {
                    MathFlavor::Libm
                },
            },
            Target::Gpu { .. } => EmitTarget {
                gpu: true,
                math: MathFlavor::Portable { nvvm: true },
            },
        }
    }
}
