"""The kvm stage1 backend: pods as qemu virtual machines (KVM, or TCG where KVM is unusable)."""
