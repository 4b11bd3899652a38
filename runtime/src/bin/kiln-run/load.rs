//! Opening an artifact (the manifest is verified) and loading it onto a
//! device as a language model.

use crate::args::Target;
use anyhow::Context;
use kiln_runtime::artifact::Artifact;
use kiln_runtime::lm::{ExecutorLm, DEFAULT_CONTEXT};
use std::path::Path;

/// The verified artifact and its model on the device, with its state
/// allocated.
pub fn load(dir: &Path, target: &Target) -> anyhow::Result<(Artifact, ExecutorLm)> {
    // Artifact errors name the directory and the file themselves.
    let artifact = Artifact::open(dir)?;
    let executor = artifact.load(&target.device())?;
    let ctx = target
        .ctx
        .or(artifact.generation().max_context)
        .unwrap_or(DEFAULT_CONTEXT);
    let lm = ExecutorLm::new(executor, ctx).with_context(|| dir.display().to_string())?;
    Ok((artifact, lm))
}
