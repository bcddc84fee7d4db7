"""The work in progress: where the node is in its training round and when it next shares and saves.

A round (DiLoCo's outer step) is ``inner_steps_per_sync`` training steps, after which the
computers training the same layers share what they learned; the node saves a checkpoint every
``checkpoint_every`` steps (and when it stops). Times ahead are estimated from the recent pace of
steps, and said as estimates ("about").
"""

from __future__ import annotations

from collections import deque

from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QProgressBar, QWidget

from app.node.events import StepDone
from app.node.values import TrainingSchedule

PACE_STEPS = 20  # the pace is the mean duration of the last this-many steps


def about(seconds: float) -> str:
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


class WorkView(QGroupBox):
    def __init__(self, schedule: TrainingSchedule, parent: QWidget | None = None) -> None:
        super().__init__("Training round", parent)
        self.setToolTip("A round is DiLoCo's outer step: the computers holding the same layers train on their own "
                        "for H inner steps, then average what they learned (pseudo-gradients).")
        self.schedule = schedule
        self.round_bar = QProgressBar()
        self.round_bar.setFormat("step %v of %m in this round")
        self.round_bar.setRange(0, max(1, schedule.inner_steps))
        self.round_bar.setValue(0)
        self.sync_label = QLabel("Waiting for the first training step.")
        self.checkpoint_label = QLabel(f"Saves its work every {schedule.checkpoint_every} steps and when it stops.")
        for label in (self.sync_label, self.checkpoint_label):
            label.setWordWrap(True)
        grid = QGridLayout(self)
        grid.addWidget(QLabel("This round"), 0, 0)
        grid.addWidget(self.round_bar, 0, 1)
        grid.addWidget(QLabel("Next sharing"), 1, 0)
        grid.addWidget(self.sync_label, 1, 1)
        grid.addWidget(QLabel("Next save"), 2, 0)
        grid.addWidget(self.checkpoint_label, 2, 1)
        self._times: deque[float] = deque(maxlen=PACE_STEPS + 1)

    def set_schedule(self, schedule: TrainingSchedule) -> None:
        self.schedule = schedule

    def pace_s(self) -> float | None:
        """Seconds per step lately, or None before two steps were seen."""
        if len(self._times) < 2:
            return None
        return (self._times[-1] - self._times[0]) / (len(self._times) - 1)

    def on_step(self, event: StepDone) -> None:
        self._times.append(event.timestamp)
        pace = self.pace_s()
        per_round = event.inner_steps_per_sync or self.schedule.inner_steps
        inner = min(max(event.inner_step, 0), per_round)
        self.round_bar.setRange(0, max(1, per_round))
        self.round_bar.setValue(inner)
        left = per_round - inner
        when = f", in {about(left * pace)}" if pace is not None else ""
        self.sync_label.setText(f"after {left} more step{'s' if left != 1 else ''}{when}: the computers "
                                "training these layers share what they learned" if left else
                                "sharing what it learned with the other computers now")
        every = self.schedule.checkpoint_every
        to_save = every - event.step % every
        when = f", in {about(to_save * pace)}" if pace is not None else ""
        self.checkpoint_label.setText(f"at step {event.step + to_save} ({to_save} more{when}); also when it stops")
