"""The real phone path on one machine: livekit-server, livekit-sip, Redis and a SIP phone.

Used by `make phone-demo`, the tests in tests/phone and the SIP benches. Everything runs
inside a private network namespace (`.ci/in-private-net`): loopback alone breaks ICE, and
nothing started here is reachable from outside the machine.
"""
