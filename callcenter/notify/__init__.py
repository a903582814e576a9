"""SMS to carers, stations and families through Twilio, and the signed links they open."""
