"""Reports: plotly figures (``figures``) and one self-contained HTML file (``html.Report``).

Each study writes its own section (``studies/<study>.section``) into a ``Report``.
"""
