"""The nspawn stage1 backend: pods as systemd-nspawn containers."""
