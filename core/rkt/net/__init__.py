"""Pod networks: CNI attachments of a per-pod network namespace (docs/networking.md).

- :mod:`rkt.net.request`: the ``--net``, ``--port``, ``--dns*``, ``--hosts-entry`` flags;
- :mod:`rkt.net.config`: the built-in networks and the user's ``net.d``;
- :mod:`rkt.net.cni`: running CNI plugins per the CNI specification;
- :mod:`rkt.net.netns`: the pod's network namespace (system calls through ctypes);
- :mod:`rkt.net.dns`: the pod's resolv.conf and hosts;
- :mod:`rkt.net.pod`: setting a pod's network up before its stage1 runs, and
  tearing it down when the pod is removed.

A stage1 sees only the result, ``PodRuntime.network`` (docs/stage1.md).
"""
