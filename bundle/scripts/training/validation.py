"""When training validates: every ``interval`` epochs and every epoch of the last ``final_epochs``.

The release validates its EMA weights every 25 epochs and every epoch of the last 20 (of 200); MONAI's
``ValidationHandler`` knows only "every N", so this subclass attaches it with an ignite event filter.
"""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.engines import Evaluator
from monai.handlers import ValidationHandler

from ..predict import check_sliding_window


class ValidationSchedule(ValidationHandler):
    """MONAI's ``ValidationHandler`` (epoch level) that also runs on each of the last ``final_epochs`` epochs.

    Args:
        interval: validate when the epoch is a multiple of it.
        validator: the evaluator; its sliding-window settings are checked now (not at the first validation, after a
            whole epoch of training).
        final_epochs: validate every epoch once ``epoch > max_epochs - final_epochs`` (0: never extra).
    """

    def __init__(self, interval: int, validator: Evaluator | None = None, final_epochs: int = 0) -> None:
        if int(interval) < 1 or int(final_epochs) < 0:
            raise ValueError(f"validation needs interval >= 1 and final_epochs >= 0, got {interval}, {final_epochs}")
        if validator is not None:  # MONAI's base Evaluator has no inferer; SupervisedEvaluator's is checked
            check_sliding_window(getattr(validator, "inferer", None), overlap_option="val_overlap")
        super().__init__(interval=int(interval), validator=validator, epoch_level=True)
        self.final_epochs = int(final_epochs)

    def due(self, engine: Engine, epoch: int) -> bool:
        """Whether ``epoch`` (1-based) is a validation epoch of ``engine``'s run."""
        last = engine.state.max_epochs or 0
        return epoch % self.interval == 0 or epoch > last - self.final_epochs

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self.due), self)
