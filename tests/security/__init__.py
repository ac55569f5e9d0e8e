"""Attacks on the real server by real logins: every probe says what it tried."""
