"""The clinical scar report: per study, per slice and per AHA segment, as JSON, a bullseye and a one-page PDF."""
