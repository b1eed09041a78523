"""Human evaluation: blind side-by-side judgements in the browser, stored in SQLite, aggregated for the report.

`sampling` draws the study (dialogues, systems, who sees which pair on which side), `store` keeps it
(SQLite, WAL, one transaction per answer), `app` and `pages` serve the rating page, `aggregate` and
`agreement` turn judgements into results, `export` writes them, `simulate` answers with scripted raters.
See docs/human-evaluation.md.
"""
