"""A reuse method defined outside the package: the proof that the plugin boundary holds. The tiny
workflow config lists this package's spec under ``plugins``; nothing shared names it."""
