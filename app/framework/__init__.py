"""The handler framework: what a job type is made of (``Handler``, ``Step``), what a step
receives (``StepContext``), the registry the runtime builds chains from, and the job's
workspace. The job types themselves live in the ``handlers`` package.
"""
