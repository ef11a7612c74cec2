"""Reports: plotly figures (``figures``) and one self-contained HTML file (``html.Report``).

Each study writes its own section (``studies/<study>.section``) into a ``Report``.
"""

# docs/theory.md's templates (``docs_theory``) register themselves beside ``docs``'s
# when imported; importing them here makes every ``report.docs`` user see them.
from rosetta_jax.report import docs_theory  # pylint: disable=unused-import
