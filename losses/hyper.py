"""The hyperparameters an objective declares: flag, default, help and the values it accepts.

main.py's parser, args.json and the results table read them from the registry
(losses.OBJECTIVES), so a new objective brings its own flags and main.py has no per-loss
code. Two objectives may declare the same name (e.g. `margin`): they share the flag, its
type and its bounds, and each keeps its own default and help.
"""
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Hyper:
    name: str              # the builder's keyword and the dest in main.py's args
    flags: tuple           # command-line spellings; the first one is used in messages
    default: object        # this objective's default
    help: str              # this objective's use of it
    type: type = float
    choices: tuple = None
    minimum: float = None  # value >= minimum
    positive: bool = False  # value > 0
    maximum: float = None  # value <= maximum
    label: str = None      # its name in the results table's weights column (default: name)
    quiet: object = None   # a value the weights column leaves out (a no-op such as 0 smoothing)
    only_if: tuple = None  # (name, value): it applies only while that hyperparameter has that value
    search: tuple = None   # the tuner's range (low, high) or, for a str, the choices
    log: bool = False      # search on a log scale
    nargs: str = None      # argparse's nargs ("*": a list of values, e.g. --pml-args k=v k=v)

    def but(self, **changes):
        """The same hyperparameter with another default or help (for another objective)."""
        return replace(self, **changes)

    @property
    def flag(self):
        return self.flags[0]

    def problem(self, value):
        """Why `value` is not accepted, or None."""
        if self.positive and not value > 0:
            return f"{self.flag} must be positive, got {value}"
        if self.minimum is not None and not value >= self.minimum:
            return (f"{self.flag} must not be negative, got {value}" if self.minimum == 0 else
                    f"{self.flag} must be at least {self.minimum:g}, got {value}")
        if self.maximum is not None and not value <= self.maximum:
            return f"{self.flag} must be at most {self.maximum:g}, got {value}"
        return None

    def applies(self, values):
        """Whether it is used given the other hyperparameters' values (a dict)."""
        return self.only_if is None or values.get(self.only_if[0]) == self.only_if[1]

    def show(self, value):
        """`label=value` for the weights column."""
        text = (f"{value:g}" if isinstance(value, float) else
                " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
        return f"{self.label or self.name}={text}"


# Fields two declarations of one name must agree on (they are one flag).
SHARED = ("flags", "type", "choices", "minimum", "positive", "maximum", "label", "quiet", "only_if",
          "nargs")


def suggest(trial, h):
    """The Optuna trial's value for hyperparameter `h` (its search range)."""
    if h.type is str:
        return trial.suggest_categorical(h.name, list(h.search))
    if h.type is int:
        return trial.suggest_int(h.name, *h.search, log=h.log)
    return trial.suggest_float(h.name, *h.search, log=h.log)
