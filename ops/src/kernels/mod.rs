//! The kernels: leaves that compute one op one way and import only the shared types and
//! helpers (`geometry`, `storage`, `epilogue`, `gemm`, …), never each other. Which one runs
//! is [`crate::plan`]'s decision.

pub(crate) mod batch_norm;
pub(crate) mod composed;
pub(crate) mod conv_gemm;
#[cfg(target_arch = "x86_64")]
pub(crate) mod conv_padded;
pub(crate) mod depthwise;
pub(crate) mod pixel_ce;
pub(crate) mod pool;
pub(crate) mod resize;
pub(crate) mod roi_align;
pub(crate) mod winograd;
