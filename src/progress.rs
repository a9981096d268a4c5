//! Progress of a training run on the terminal: one `indicatif` bar per epoch with the
//! running loss, learning rate, throughput and ETA, and the epoch's summary line above it.
//! Where stderr is not a terminal (CI logs, pipes) the bar is replaced by a plain line every
//! tenth of an epoch, so a log shows that a run is alive without control characters.

use std::cell::RefCell;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use training::trainer::{EpochMetrics, Progress};

/// The progress display of one training run (possibly several epochs, resumed or not).
pub struct RunProgress {
    /// The bar of the current epoch, when stderr is a terminal.
    bar: Option<ProgressBar>,
    /// The epoch the bar (or the plain lines) belong to.
    epoch: Option<usize>,
    /// Tenths of the epoch already reported as plain lines.
    plain_tenths: usize,
    /// Whether stderr is a terminal.
    terminal: bool,
    /// What each line starts with (the demo's recipe name, or nothing).
    prefix: String,
}

impl RunProgress {
    /// A display whose lines start with `prefix` (empty for none).
    pub fn new(prefix: &str) -> Self {
        Self {
            bar: None,
            epoch: None,
            plain_tenths: 0,
            terminal: std::io::stderr().is_terminal(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}: ")
            },
        }
    }

    /// Shows where the run is after a batch.
    pub fn update(&mut self, p: Progress) {
        if self.epoch != Some(p.epoch) {
            self.start_epoch(p);
        }
        let message = format!(
            "loss {:.4}  lr {:.5}  {:.1} img/s",
            p.loss, p.lr, p.img_per_s
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(p.batch as u64);
                bar.set_message(message);
            }
            None => {
                let tenths = 10 * p.batch / p.batches.max(1);
                if tenths > self.plain_tenths {
                    self.plain_tenths = tenths;
                    eprintln!(
                        "{}epoch {}/{} batch {}/{}  {message}",
                        self.prefix,
                        p.epoch + 1,
                        p.epochs,
                        p.batch,
                        p.batches
                    );
                }
            }
        }
    }

    fn start_epoch(&mut self, p: Progress) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.epoch = Some(p.epoch);
        self.plain_tenths = 0;
        if self.terminal {
            let bar = ProgressBar::new(p.batches as u64);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{}epoch {}/{} [{{bar:24}}] {{pos}}/{{len}} {{msg}} ETA {{eta}}",
                    self.prefix,
                    p.epoch + 1,
                    p.epochs
                ))
                .expect("a valid template")
                .progress_chars("=> "),
            );
            self.bar = Some(bar);
        }
    }

    /// Prints an epoch's summary line (to stdout) and clears its bar.
    pub fn epoch_done(&mut self, m: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.epoch = None;
        println!("{}{}", self.prefix, epoch_line(m));
    }

    /// Runs `f` with the two callbacks `Trainer::run` takes, both drawing on this display.
    pub fn drive<R>(
        self,
        f: impl FnOnce(&mut dyn FnMut(Progress), &mut dyn FnMut(&EpochMetrics)) -> R,
    ) -> R {
        let cell = RefCell::new(self);
        let result = f(&mut |p| cell.borrow_mut().update(p), &mut |m| {
            cell.borrow_mut().epoch_done(m)
        });
        if let Some(bar) = cell.borrow_mut().bar.take() {
            bar.finish_and_clear();
        }
        result
    }
}

/// One epoch's summary: top-1/top-5 for a classifier, the task's own numbers otherwise.
pub fn epoch_line(m: &EpochMetrics) -> String {
    if !m.values.contains_key("top1") {
        let values: Vec<String> = m
            .values
            .iter()
            .map(|(k, v)| match k.as_str() {
                "map" | "map07" | "miou" | "miou_present" | "pixacc" => {
                    format!("{k} {:.2}%", 100.0 * v)
                }
                _ => format!("{k} {v:.4}"),
            })
            .collect();
        return format!(
            "epoch {:>3}: train loss {:.4}  {}  lr {:.5}  {:.1} img/s  {:.1} s",
            m.epoch,
            m.train_loss,
            values.join("  "),
            m.lr,
            m.img_per_s,
            m.seconds
        );
    }
    format!(
        "epoch {:>3}: train loss {:.4}  val loss {:.4}  top-1 {:.2}%  top-5 {:.2}%  lr {:.5}  {:.1} img/s  {:.1} s",
        m.epoch,
        m.train_loss,
        m.val_loss(),
        100.0 * m.top1(),
        100.0 * m.top5(),
        m.lr,
        m.img_per_s,
        m.seconds
    )
}
