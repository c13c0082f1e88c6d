//! `--policy`: which batching rule decides when a batch goes.

use std::time::Duration;

use batchgate_policy::{Adaptive, Rule};

/// The batching rules a flag can name. `--help` lists them; anything else is refused by clap
/// with the valid names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PolicyName {
    /// Wait-or-full, whatever the load.
    #[default]
    Fixed,
    /// Wait-or-full within bounds, steered by the arrival rate and the worker's free slots.
    Adaptive,
}

impl PolicyName {
    /// The rule this name stands for; `max_hold` bounds the adaptive rule's longest wait (the
    /// fixed rule has none).
    pub fn rule(self, max_hold: Duration) -> Rule {
        match self {
            PolicyName::Fixed => Rule::Fixed,
            PolicyName::Adaptive => Rule::Adaptive(Adaptive {
                max_hold,
                ..Adaptive::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn names_are_the_rules_names() {
        for name in PolicyName::value_variants() {
            let shown = name.to_possible_value().expect("not hidden");
            assert_eq!(shown.get_name(), name.rule(Duration::ZERO).name());
        }
        let hold = Duration::from_millis(80);
        let Rule::Adaptive(adaptive) = PolicyName::Adaptive.rule(hold) else {
            panic!("adaptive expected")
        };
        assert_eq!(adaptive.max_hold, hold);
    }
}
