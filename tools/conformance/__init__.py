"""The OpenStack clients' own functional test suites, run against a demo site.

`make conformance` (python -m tools.conformance) starts a demo of its own, points
python-openstackclient's and openstacksdk's functional tests at it through a clouds.yaml, runs
them with pytest and judges the result against the skip list (skips.txt): a failure that is not
on the list fails the run, and so does a listed failure that passes now."""
