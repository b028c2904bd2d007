"""Language ID: the detector backends behind one protocol (backends), a langdetect-exact fast detector
(langdetect_fast), function-word lists, and the filter's language rule (rule)."""
