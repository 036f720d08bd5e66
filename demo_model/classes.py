"""The demo model's classes: Fashion-MNIST's labels, and a prompt text to its label."""
from __future__ import annotations

# The dataset's labels 0-9 in order (Zalando's Fashion-MNIST README).
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")


def class_label(text: str, where: str = "") -> int:
    """The label of a class name ("Sneaker", "sneakers", "T-shirt", "top") or index ("7"); -1 for an empty text.

    Case and spacing do not matter; a plural "s" and either half of "T-shirt/top" are accepted. An unknown
    class raises ValueError, its message starting with `where` (the node asking) when given.
    """
    name = " ".join(str(text).split()).lower()
    if not name:
        return -1
    if name.isdigit() and int(name) < len(CLASS_NAMES):
        return int(name)
    for label, full in enumerate(CLASS_NAMES):
        words = {full.lower(), *full.lower().split("/")}
        if name in words or name in {word + "s" for word in words}:
            return label
    valid = ", ".join(f"{label} {full}" for label, full in enumerate(CLASS_NAMES))
    prefix = f"{where}: " if where else ""
    raise ValueError(f"{prefix}unknown Fashion-MNIST class {text!r}; valid classes (name or index): {valid}; "
                     "an empty prompt is unconditional")
