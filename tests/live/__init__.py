"""Tests against real `chatsvc serve` processes over TCP (signals, probes, drain, load balancer)."""
