import logging
import os

from django.shortcuts import redirect, render

from . import __version__, tasks
from .forms import ContactForm
from .models import Lead

log = logging.getLogger(__name__)


def _context(**extra):
    ctx = {
        "sum_core_version": __version__,
        "build_id": os.environ.get("BUILD_ID") or "unknown",
        "git_sha": os.environ.get("GIT_SHA") or "unknown",
    }
    ctx.update(extra)
    return ctx


def home(request):
    # The latest enquiry, as a real homepage might show it: a full-row read of
    # Lead, so it selects every column this release's model knows of (and fails
    # once a migration has dropped or renamed one of them).
    latest_lead = Lead.objects.first()
    return render(request, "sum_core/home.html", _context(latest_lead=latest_lead))


def contact(request):
    if request.method == "POST":
        form = ContactForm(request.POST)
        if form.is_valid():
            lead = form.save()
            log.info("lead %s created", lead.pk)
            tasks.enqueue(f"notify-lead:{lead.pk}")
            return redirect("sum_core:contact-thanks")
    else:
        form = ContactForm()
    return render(request, "sum_core/contact.html", _context(form=form))


def contact_thanks(request):
    return render(request, "sum_core/thanks.html", _context())
