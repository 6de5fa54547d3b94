"""Views of the django_hello test project."""

from django.http import HttpResponse, HttpResponseBadRequest


def index(request):
    return HttpResponse("Hello from Django\n", content_type="text/plain")


def greet(request):
    if request.method != "POST":
        return HttpResponse('<form method="post"><input name="name"><button>Greet</button></form>\n')
    name = request.POST.get("name", "")
    if not name:
        return HttpResponseBadRequest("a name is needed\n")
    return HttpResponse(f"Hello, {name}!\n", content_type="text/plain")
