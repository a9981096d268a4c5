//! Ablations as the paper's Tables 4 and 6 build them: a first recipe, then each row the
//! previous one plus one refinement (or another named recipe).
//!
//! A refinement copies its settings from a *source* recipe (the shipped `tricks` one with
//! the command line's overrides applied), so its values live in one place. An override of a
//! setting that a step of the ablation switches on is that step's value: `--warmup-epochs
//! 1` with `+warmup` makes the warmup 1 epoch from that row on and leaves the rows before it
//! without warmup. Every other override applies to every row.

use sha2::{Digest, Sha256};

use super::{LrSchedule, Precision, Recipe};

/// One refinement of the paper, as an ablation step names it (`+cosine`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refinement {
    /// Linear learning-rate warmup (Section 3.1).
    Warmup,
    /// Zero γ in the last batch norm of each residual block (Section 3.1).
    ZeroGamma,
    /// No weight decay on biases and batch norm's γ, β (Section 3.1).
    NoBiasDecay,
    /// FP16 compute with loss scaling (Section 3.2).
    Fp16,
    /// Cosine learning-rate decay (Section 5.1).
    Cosine,
    /// Label smoothing (Section 5.2).
    LabelSmoothing,
    /// Knowledge distillation from a teacher (Section 5.3).
    Distillation,
    /// Mixup training (Section 5.4).
    Mixup,
}

impl Refinement {
    /// Every refinement, in the paper's order.
    pub const ALL: [Refinement; 8] = [
        Refinement::Warmup,
        Refinement::ZeroGamma,
        Refinement::NoBiasDecay,
        Refinement::Fp16,
        Refinement::Cosine,
        Refinement::LabelSmoothing,
        Refinement::Distillation,
        Refinement::Mixup,
    ];

    /// The step's name after `+`.
    pub fn name(self) -> &'static str {
        match self {
            Refinement::Warmup => "warmup",
            Refinement::ZeroGamma => "zero-gamma",
            Refinement::NoBiasDecay => "no-bias-decay",
            Refinement::Fp16 => "fp16",
            Refinement::Cosine => "cosine",
            Refinement::LabelSmoothing => "label-smoothing",
            Refinement::Distillation => "distill",
            Refinement::Mixup => "mixup",
        }
    }

    /// The refinement named `name` (without the `+`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Copies this refinement's settings from `source` into `to`.
    pub fn apply(self, to: &mut Recipe, source: &Recipe) {
        match self {
            Refinement::Warmup => to.optim.warmup_epochs = source.optim.warmup_epochs,
            Refinement::ZeroGamma => to.zero_gamma = source.zero_gamma,
            Refinement::NoBiasDecay => to.optim.no_bias_decay = source.optim.no_bias_decay,
            Refinement::Fp16 => to.optim.precision = source.optim.precision,
            Refinement::Cosine => to.optim.lr_schedule = source.optim.lr_schedule,
            Refinement::LabelSmoothing => to.label_smoothing = source.label_smoothing,
            Refinement::Distillation => {
                to.teacher = source.teacher.clone();
                to.teacher_model = source.teacher_model.clone();
                to.distill_temperature = source.distill_temperature;
            }
            Refinement::Mixup => to.mixup_alpha = source.mixup_alpha,
        }
    }

    /// What the step switches on, with its value, in the paper's words.
    pub fn describe(self, r: &Recipe) -> String {
        match self {
            Refinement::Warmup => format!("linear warmup, {} epochs", r.optim.warmup_epochs),
            Refinement::ZeroGamma => "zero γ".into(),
            Refinement::NoBiasDecay => "no bias decay".into(),
            Refinement::Fp16 => format!("{:?} compute", r.optim.precision).to_lowercase(),
            Refinement::Cosine => "cosine learning-rate decay".into(),
            Refinement::LabelSmoothing => format!("label smoothing ε = {}", r.label_smoothing),
            Refinement::Distillation => format!(
                "distillation from {}, T = {}",
                r.teacher.as_deref().unwrap_or("?"),
                r.distill_temperature
            ),
            Refinement::Mixup => format!("mixup α = {}", r.mixup_alpha),
        }
    }

    /// Whether `r` already has this refinement switched on.
    fn is_on(self, r: &Recipe) -> bool {
        match self {
            Refinement::Warmup => r.optim.warmup_epochs > 0.0,
            Refinement::ZeroGamma => r.zero_gamma,
            Refinement::NoBiasDecay => r.optim.no_bias_decay,
            Refinement::Fp16 => r.optim.precision == Precision::F16,
            Refinement::Cosine => r.optim.lr_schedule == LrSchedule::Cosine,
            Refinement::LabelSmoothing => r.label_smoothing > 0.0,
            Refinement::Distillation => r.teacher.is_some(),
            Refinement::Mixup => r.mixup_alpha > 0.0,
        }
    }
}

/// One step of `--steps`: a recipe (shipped name or TOML path) or `+refinement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Start again from this recipe.
    Recipe(String),
    /// The previous row plus this refinement.
    Add(Refinement),
}

impl Step {
    /// Parses `baseline,+cosine,+label-smoothing,…`: the first step must be a recipe.
    pub fn parse_list(text: &str) -> Result<Vec<Step>, String> {
        let steps: Vec<Step> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix('+') {
                Some(name) => Refinement::parse(name).map(Step::Add).ok_or_else(|| {
                    format!(
                        "--steps: unknown refinement +{name}; known: {}",
                        Refinement::ALL.map(|r| format!("+{}", r.name())).join(", ")
                    )
                }),
                None => Ok(Step::Recipe(s.to_string())),
            })
            .collect::<Result<_, _>>()?;
        match steps.first() {
            None => Err("--steps is empty".into()),
            Some(Step::Add(r)) => Err(format!(
                "--steps must start with a recipe (e.g. baseline), not +{}",
                r.name()
            )),
            Some(Step::Recipe(_)) => Ok(steps),
        }
    }

    /// The step as `--steps` writes it.
    pub fn label(&self) -> String {
        match self {
            Step::Recipe(name) => name.clone(),
            Step::Add(r) => format!("+{}", r.name()),
        }
    }
}

/// One row of an ablation: its step, what it changed, and the recipe it trains.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The step, as `--steps` wrote it.
    pub label: String,
    /// What changed against the row before.
    pub change: String,
    /// The recipe of the row's runs (seed to be set per run).
    pub recipe: Recipe,
}

/// The rows of `steps`. `load` reads a recipe by name or path; `overrides` applies the
/// command line's settings; `source` is the recipe refinements copy from (overrides already
/// applied). See the module doc for which override goes where.
pub fn rows(
    steps: &[Step],
    load: impl Fn(&str) -> Result<Recipe, String>,
    overrides: impl Fn(Recipe) -> Recipe,
    source: &Recipe,
) -> Result<Vec<Row>, String> {
    let switched: Vec<Refinement> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Add(r) => Some(*r),
            Step::Recipe(_) => None,
        })
        .collect();
    let mut out: Vec<Row> = Vec::new();
    for step in steps {
        let row = match step {
            Step::Recipe(name) => {
                let plain = load(name)?;
                let mut recipe = overrides(plain.clone());
                // An override of a setting a later step switches on belongs to that step.
                for r in &switched {
                    r.apply(&mut recipe, &plain);
                }
                Row {
                    label: name.clone(),
                    change: if out.is_empty() {
                        "—".into()
                    } else {
                        format!("the `{name}` recipe")
                    },
                    recipe,
                }
            }
            Step::Add(r) => {
                let previous = &out.last().expect("the first step is a recipe").recipe;
                if r.is_on(previous) {
                    return Err(format!(
                        "--steps: +{} is already on in the row before it",
                        r.name()
                    ));
                }
                let mut recipe = previous.clone();
                r.apply(&mut recipe, source);
                if !r.is_on(&recipe) {
                    return Err(format!(
                        "--steps: +{} switches nothing on (the source recipe has it off{})",
                        r.name(),
                        if *r == Refinement::Distillation {
                            "; give --teacher"
                        } else {
                            ""
                        }
                    ));
                }
                Row {
                    label: step.label(),
                    change: r.describe(&recipe),
                    recipe,
                }
            }
        };
        row.recipe.validate()?;
        out.push(row);
    }
    Ok(out)
}

/// A key naming one run of an ablation: the first 16 hex digits of the SHA-256 of the
/// model, the data's path and the recipe (seed included). The same settings give the same
/// key, so a finished run is reused and an interrupted one resumed.
pub fn run_key(model: &str, data: &str, recipe: &Recipe) -> String {
    let mut h = Sha256::new();
    for part in [model, data, &recipe.to_toml()] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str) -> Result<Recipe, String> {
        Recipe::load(name).map_err(|e| e.to_string())
    }

    #[test]
    fn each_row_is_the_previous_plus_one_refinement() {
        let steps = Step::parse_list("baseline, +cosine,+label-smoothing,+mixup").unwrap();
        let source = load("tricks").unwrap();
        let rows = rows(&steps, load, |r| r, &source).unwrap();
        let base = load("baseline").unwrap();
        assert_eq!(rows[0].recipe, base);
        assert_eq!(rows[1].recipe.optim.lr_schedule, LrSchedule::Cosine);
        assert_eq!(rows[1].recipe.label_smoothing, 0.0);
        assert_eq!(rows[2].recipe.label_smoothing, source.label_smoothing);
        assert_eq!(rows[2].recipe.mixup_alpha, 0.0);
        assert_eq!(rows[3].recipe.mixup_alpha, source.mixup_alpha);
        assert_eq!(rows[3].recipe.optim.lr_schedule, LrSchedule::Cosine);
        // Nothing else changes.
        let mut undo = rows[3].recipe.clone();
        undo.optim.lr_schedule = base.optim.lr_schedule;
        undo.label_smoothing = base.label_smoothing;
        undo.mixup_alpha = base.mixup_alpha;
        assert_eq!(undo, base);
        assert_eq!(rows[3].change, format!("mixup α = {}", source.mixup_alpha));
    }

    #[test]
    fn an_override_of_a_switched_setting_is_that_steps_value() {
        let steps = Step::parse_list("baseline,+warmup").unwrap();
        let overrides = |mut r: Recipe| {
            r.optim.warmup_epochs = 1.0;
            r.optim.epochs = 8;
            r
        };
        let source = overrides(load("tricks").unwrap());
        let rows = rows(&steps, load, overrides, &source).unwrap();
        assert_eq!(rows[0].recipe.optim.warmup_epochs, 0.0);
        assert_eq!(rows[0].recipe.optim.epochs, 8);
        assert_eq!(rows[1].recipe.optim.warmup_epochs, 1.0);
        assert_eq!(rows[1].recipe.optim.epochs, 8);
    }

    #[test]
    fn bad_steps_are_clear_errors() {
        let err = |s: &str| Step::parse_list(s).unwrap_err();
        assert!(err("+cosine").contains("must start with a recipe"));
        assert!(err("baseline,+cosin").contains("unknown refinement +cosin"));
        assert!(err("").contains("empty"));
        let source = load("tricks").unwrap();
        let twice = Step::parse_list("baseline,+cosine,+cosine").unwrap();
        assert!(rows(&twice, load, |r| r, &source)
            .unwrap_err()
            .contains("already on"));
        let teacherless = Step::parse_list("baseline,+distill").unwrap();
        assert!(rows(&teacherless, load, |r| r, &source)
            .unwrap_err()
            .contains("--teacher"));
        assert!(rows(
            &Step::parse_list("nosuchrecipe").unwrap(),
            load,
            |r| r,
            &source
        )
        .is_err());
    }

    #[test]
    fn run_keys_follow_the_settings() {
        let r = load("baseline").unwrap();
        let k = run_key("resnet18", "/data", &r);
        assert_eq!(k.len(), 16);
        assert_eq!(k, run_key("resnet18", "/data", &r));
        let mut other = r.clone();
        other.optim.seed += 1;
        assert_ne!(k, run_key("resnet18", "/data", &other));
        assert_ne!(k, run_key("resnet50", "/data", &r));
    }
}
