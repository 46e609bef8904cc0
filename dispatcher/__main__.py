"""`python -m dispatcher` is `sms-dispatch`."""

from dispatcher.cli import main

main(prog_name="sms-dispatch")
