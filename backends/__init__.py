"""Pluggable proving backends: the zkref mock backend and EZKL."""
