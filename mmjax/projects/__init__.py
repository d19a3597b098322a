"""One package per paper (DESIGN.md section 2): its task, model assembly, paper-specific data
glue, benchmarks and a README mapping the paper's equations, tables and figures to code.

Projects import the core (mmjax.data, mmjax.nn, mmjax.models, mmjax.train, ...); the core never
imports a project. `mmjax.tasks.get_task` imports every package here to find the registered
tasks, so a new project needs no registration anywhere else.
"""
