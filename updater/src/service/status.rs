//! What the service is doing, as its D-Bus properties show it (pure): the operation, its
//! phase, progress that only rises within one operation, the last error.

use crate::progress::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Preparing,
    Writing,
    Verifying,
    Done,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Preparing => "preparing",
            Phase::Writing => "writing",
            Phase::Verifying => "verifying",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }
}

/// How an operation ended, as the `Completed` signal says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    Success,
    NothingToDo,
    Refused,
    Failed,
    Cancelled,
}

impl Completion {
    pub fn name(self) -> &'static str {
        match self {
            Completion::Success => "success",
            Completion::NothingToDo => "nothing-to-do",
            Completion::Refused => "refused",
            Completion::Failed => "failed",
            Completion::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStatus {
    /// `install`, or empty when idle.
    pub operation: String,
    pub phase: Phase,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub last_error: String,
    /// Each image of a release of several, in the order written (empty for one image).
    pub images: Vec<ImageProgress>,
    /// Which of `images` is being written.
    pub current_image: Option<usize>,
}

/// One image's progress within an install of several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageProgress {
    pub name: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

impl Default for ServiceStatus {
    fn default() -> ServiceStatus {
        ServiceStatus {
            operation: String::new(),
            phase: Phase::Idle,
            bytes_done: 0,
            bytes_total: 0,
            last_error: String::new(),
            images: Vec::new(),
            current_image: None,
        }
    }
}

impl ServiceStatus {
    pub fn busy(&self) -> bool {
        !self.operation.is_empty()
    }

    pub fn start(&mut self, operation: &str) {
        *self = ServiceStatus {
            operation: operation.to_owned(),
            phase: Phase::Preparing,
            last_error: std::mem::take(&mut self.last_error),
            ..ServiceStatus::default()
        };
    }

    /// Applies an install event; true when the phase or the image being written changed
    /// (worth a signal at once).
    pub fn apply(&mut self, event: &Event<'_>) -> bool {
        let before = (self.phase, self.current_image);
        match event {
            Event::Started {
                total_bytes,
                images,
                ..
            } => {
                self.bytes_total = *total_bytes;
                self.phase = Phase::Writing;
                self.images = images
                    .iter()
                    .map(|(name, bytes)| ImageProgress {
                        name: (*name).to_owned(),
                        bytes_done: 0,
                        bytes_total: *bytes,
                    })
                    .collect();
            }
            Event::Image { name } => {
                self.current_image = self.images.iter().position(|i| i.name == *name);
            }
            Event::Written { bytes } => {
                self.bytes_done = (self.bytes_done + bytes).min(self.bytes_total);
                if let Some(image) = self.current_image.and_then(|i| self.images.get_mut(i)) {
                    image.bytes_done = (image.bytes_done + bytes).min(image.bytes_total);
                }
            }
            Event::Verifying | Event::Finished => self.phase = Phase::Verifying,
            Event::Message(_) => {}
        }
        (self.phase, self.current_image) != before
    }

    /// Whole percent of the image written; 100 only once the operation succeeded.
    pub fn percent(&self) -> u32 {
        match self.phase {
            Phase::Done => 100,
            _ if self.bytes_total == 0 => 0,
            _ => ((self.bytes_done * 100 / self.bytes_total) as u32).min(99),
        }
    }

    pub fn finish(&mut self, completion: Completion, message: &str) {
        self.operation.clear();
        self.phase = match completion {
            Completion::Success | Completion::NothingToDo => Phase::Done,
            Completion::Refused | Completion::Failed => Phase::Failed,
            Completion::Cancelled => Phase::Cancelled,
        };
        if matches!(completion, Completion::Failed | Completion::Refused) {
            self.last_error = message.to_owned();
        }
        if completion == Completion::NothingToDo {
            self.bytes_done = self.bytes_total;
        }
        self.current_image = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanSummary;
    use crate::slot::Slot;

    #[test]
    fn progress_rises_to_100_only_on_success() {
        let mut status = ServiceStatus::default();
        status.start("install");
        assert!(status.busy());
        let plan = PlanSummary {
            image_bytes: 1000,
            ..PlanSummary::default()
        };
        assert!(status.apply(&Event::Started {
            version: "2.0",
            slot: Slot::B,
            plan: &plan,
            total_bytes: 1000,
            images: &[],
        }));
        let mut seen = vec![status.percent()];
        for _ in 0..12 {
            status.apply(&Event::Written { bytes: 100 });
            seen.push(status.percent());
        }
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(status.percent(), 99, "written is not done");
        assert!(status.apply(&Event::Verifying));
        status.finish(Completion::Success, "installed");
        assert_eq!(
            (status.percent(), status.phase, status.busy()),
            (100, Phase::Done, false)
        );
    }

    #[test]
    fn a_failure_keeps_its_error_until_the_next_failure() {
        let mut status = ServiceStatus::default();
        status.start("install");
        status.finish(Completion::Failed, "no route to host");
        assert_eq!(status.last_error, "no route to host");
        status.start("install");
        status.finish(Completion::Cancelled, "cancelled");
        assert_eq!(status.phase, Phase::Cancelled);
        assert_eq!(status.last_error, "no route to host");
        assert_eq!(status.percent(), 0);
    }

    #[test]
    fn each_image_of_a_release_of_several_counts_its_own_bytes() {
        let mut status = ServiceStatus::default();
        status.start("install");
        let plan = PlanSummary::default();
        status.apply(&Event::Started {
            version: "2.0",
            slot: Slot::B,
            plan: &plan,
            total_bytes: 300,
            images: &[("rootfs", 200), ("appfs", 100)],
        });
        assert!(status.apply(&Event::Image { name: "rootfs" }));
        status.apply(&Event::Written { bytes: 200 });
        assert!(status.apply(&Event::Image { name: "appfs" }));
        status.apply(&Event::Written { bytes: 60 });
        let done: Vec<(&str, u64, u64)> = status
            .images
            .iter()
            .map(|i| (i.name.as_str(), i.bytes_done, i.bytes_total))
            .collect();
        assert_eq!(done, [("rootfs", 200, 200), ("appfs", 60, 100)]);
        assert_eq!(status.bytes_done, 260);
        // A new install starts the list afresh.
        status.finish(Completion::Success, "installed");
        status.start("install");
        assert!(status.images.is_empty());
    }
}
