//! `--config FILE`: flag values from a TOML file, layered under flags and the environment.
//!
//! The file's keys are flag names (`max-wait-ms` or `max_wait_ms`), either at the top level
//! (applied to whichever subcommand runs and has that flag) or in a table named after the
//! subcommand (`[serve]`, `[gateway]`, `[batcher]`, `[worker]`, `[bench]`; unknown keys there are an
//! error). Each value
//! becomes a command-line argument unless the flag is already on the command line or its
//! environment variable is set — which gives flag > environment > file > default with no
//! per-flag code.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::CommandFactory;

use crate::cli::Cli;

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key names no flag.
    #[error("config file {path}: unknown key `{key}`{context}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Where it was (e.g. " in [serve]").
        context: String,
    },
    /// A value of a type flags cannot take (a table, a date).
    #[error("config file {path}: key `{key}` must be a string, number, boolean or array")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
}

/// The config file named by `--config` (or `BATCHGATE_CONFIG`), if any.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("BATCHGATE_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn given_on_command_line(argv: &[OsString], long: &str) -> bool {
    let flag = format!("--{long}");
    let with_value = format!("--{long}=");
    argv.iter().any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&with_value)
    })
}

fn env_is_set(arg: &clap::Arg) -> bool {
    arg.get_env()
        .is_some_and(|name: &OsStr| std::env::var_os(name).is_some())
}

/// Turns a TOML value into the argument strings of `--long`.
fn to_args(long: &str, value: &toml::Value) -> Option<Vec<OsString>> {
    let one = |v: &toml::Value| -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            _ => None,
        }
    };
    match value {
        toml::Value::Boolean(true) => Some(vec![format!("--{long}").into()]),
        toml::Value::Boolean(false) => Some(Vec::new()),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| one(v).map(|s| format!("--{long}={s}").into()))
            .collect(),
        other => one(other).map(|s| vec![format!("--{long}={s}").into()]),
    }
}

/// Returns `argv` with the config file's values appended where neither a flag nor an
/// environment variable sets them. Without a config file, `argv` comes back unchanged.
pub fn merge_into_args(argv: Vec<OsString>) -> Result<Vec<OsString>, ConfigFileError> {
    let Some(path) = config_path(&argv) else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Parse {
            path: path.clone(),
            message: e.message().to_owned(),
        })?;

    let cli = Cli::command();
    let sub_names: Vec<String> = cli
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    // The subcommand is the first argument that names one; without it clap will complain.
    let Some(sub_name) = argv
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .find(|a| sub_names.contains(a))
    else {
        return Ok(argv);
    };
    let sub = cli
        .find_subcommand(&sub_name)
        .expect("the name was taken from the subcommands. This is a bug.");
    let knows = |cmd: &clap::Command, key: &str| {
        cmd.get_arguments()
            .chain(Cli::command().get_arguments())
            .any(|a| a.get_long() == Some(key))
    };

    let mut entries: Vec<(String, &toml::Value, bool)> = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(section) if sub_names.contains(key) => {
                if *key == sub_name {
                    entries.extend(section.iter().map(|(k, v)| (k.replace('_', "-"), v, true)));
                }
            }
            _ => entries.push((key.replace('_', "-"), value, false)),
        }
    }

    let mut extra = Vec::new();
    for (key, value, in_section) in entries {
        if key == "config" {
            continue;
        }
        let arg = sub
            .get_arguments()
            .chain(cli.get_arguments())
            .find(|a| a.get_long() == Some(key.as_str()));
        let Some(arg) = arg else {
            let known_elsewhere = cli.get_subcommands().any(|s| knows(s, &key));
            if in_section || !known_elsewhere {
                return Err(ConfigFileError::UnknownKey {
                    path,
                    context: if in_section {
                        format!(" in [{sub_name}]")
                    } else {
                        String::new()
                    },
                    key,
                });
            }
            continue;
        };
        if given_on_command_line(&argv, &key) || env_is_set(arg) {
            continue;
        }
        let args = to_args(&key, value).ok_or_else(|| ConfigFileError::BadValue {
            path: path.clone(),
            key: key.clone(),
        })?;
        extra.extend(args);
    }
    let mut argv = argv;
    argv.extend(extra);
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Command;

    fn write(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("batchgate.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    /// A throwaway directory removed on drop (std only).
    mod tempdir {
        pub(super) struct Dir(pub(super) std::path::PathBuf);
        impl Dir {
            pub(super) fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "batchgate-cfg-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or_default()
                ));
                std::fs::create_dir_all(&p).expect("mkdir");
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, ConfigFileError> {
        let argv = args.iter().map(OsString::from).collect();
        Ok(Cli::parse_from(merge_into_args(argv)?))
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let (_dir, path) =
            write("max_wait_ms = 20\n[serve]\npartitions = 4\nmax-batch-size = 32\n");
        let p = path.to_string_lossy().into_owned();
        let cli = parse(&[
            "batchgate",
            "--config",
            &p,
            "serve",
            "--max-batch-size",
            "8",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(args.batching.max_wait_ms, 20);
        assert_eq!(args.queue.partitions, Some(4));
        assert_eq!(args.batching.max_batch_size, 8);
    }

    #[test]
    fn unknown_key_in_a_section_is_an_error() {
        let (_dir, path) = write("[serve]\nmax-wiat-ms = 20\n");
        let p = path.to_string_lossy().into_owned();
        let err = parse(&["batchgate", "serve", "--config", &p]).expect_err("refused");
        assert!(
            err.to_string()
                .contains("unknown key `max-wiat-ms` in [serve]"),
            "{err}"
        );
    }

    #[test]
    fn top_level_key_of_another_subcommand_is_ignored() {
        let (_dir, path) = write("slots = 7\nmax-wait-ms = 30\n");
        let p = path.to_string_lossy().into_owned();
        let cli = parse(&["batchgate", "serve", "--config", &p]).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(args.batching.max_wait_ms, 30);
        let cli = parse(&["batchgate", "worker", "--sim", "--config", &p]).expect("parses");
        let Command::Worker(args) = cli.command else {
            panic!("worker expected")
        };
        assert_eq!(args.slots, 7);
    }

    #[test]
    fn bad_toml_is_reported_with_the_file_name() {
        let (_dir, path) = write("max-wait-ms = = 3");
        let p = path.to_string_lossy().into_owned();
        let err = parse(&["batchgate", "serve", "--config", &p]).expect_err("refused");
        assert!(err.to_string().contains("is not valid TOML"), "{err}");
    }
}
