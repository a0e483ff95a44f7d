"""A simulated XenServer / XCP-ng pool (xapi) for the tests of xapi.backup.

See README.md in this directory.  Nothing here is imported by the product, and the simulator
imports nothing from the product (docs/dev/contracts.md section 1).
"""
