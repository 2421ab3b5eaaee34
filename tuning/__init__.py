"""Tuning records shipped with roigen (installed as `roigen.tuning`): one meta_schedule
JSON database per device, under <target>/<device>/ (see roigen.records)."""
