//! `--model NAME:KEY=VALUE,…`: a further model, with its own workers and batch limits
//! (`serve`, `batcher`), or `--model NAME` (`gateway`: its batchers run elsewhere).

use super::batching::BatchingArgs;
use super::error::ConfigError;
use crate::models::ModelPart;

/// The model flags, checked against `first` (the name of the process's own model, which
/// they may not reuse) and turned into their parts. With `batching` (a process that batches)
/// each flag is `NAME:KEY=VALUE,…` with keys `worker` (a worker URL, at least one;
/// repeatable), `max_batch_size`, `max_wait_ms`, `max_inflight_batches`; what a model leaves
/// unset is as the process's own flags say. Without (a gateway alone), a flag is a name.
pub(crate) fn parse(
    flags: &[String],
    first: &str,
    batching: Option<&BatchingArgs>,
) -> Result<Vec<ModelPart>, ConfigError> {
    let mut names = vec![first.to_owned()];
    let mut parts = Vec::with_capacity(flags.len());
    for flag in flags {
        let bad = |why: &str| ConfigError::Model(format!("{flag:?}: {why}"));
        let Some(batching) = batching else {
            super::http::model_name(flag)?;
            if names.iter().any(|n| n == flag) {
                return Err(bad("a model of this name is already served"));
            }
            names.push(flag.clone());
            parts.push(ModelPart {
                name: flag.clone(),
                batcher: None,
            });
            continue;
        };
        let (name, settings) = flag
            .split_once(':')
            .ok_or_else(|| bad("expected NAME:worker=URL[,KEY=VALUE]…"))?;
        super::http::model_name(name)?;
        if names.iter().any(|n| n == name) {
            return Err(bad("a model of this name is already served"));
        }
        let mut args = batching.clone();
        args.worker_url.clear();
        for setting in settings.split(',') {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| bad("settings are KEY=VALUE"))?;
            let number = || value.parse::<u64>().map_err(|_| bad("expected a number"));
            match key {
                "worker" => args.worker_url.push(value.to_owned()),
                "max_batch_size" => args.max_batch_size = number()? as usize,
                "max_wait_ms" => args.max_wait_ms = number()?,
                "max_inflight_batches" => args.max_inflight_batches = Some(number()? as usize),
                _ => return Err(bad(&format!("unknown setting {key:?}"))),
            }
        }
        if args.worker_url.is_empty() {
            return Err(bad("a model needs at least one worker=URL"));
        }
        parts.push(ModelPart {
            name: name.to_owned(),
            batcher: Some(args.part(None, None)?),
        });
        names.push(name.to_owned());
    }
    Ok(parts)
}
