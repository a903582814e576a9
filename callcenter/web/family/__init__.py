"""The family portal: a relative listed as a household's contact signs in with their
phone and a one-time code sent by SMS, and sees that household's calls, and only those.

signin.py owns the codes, their limits and the family's sessions; history.py what a
family sees of its households' calls; routes.py the HTTP routes and the page's files.
See docs/family.md.
"""
