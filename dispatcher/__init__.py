"""The producer side of sms-dispatch: recipient lists, texts, campaigns, reports and the CLI."""
