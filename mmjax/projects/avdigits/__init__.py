"""AV-digits: the papers' training tricks measured on real data; see README.md in this folder."""

from mmjax.projects.avdigits import task  # noqa: F401  (registers 'avdigits')
